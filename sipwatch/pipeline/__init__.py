"""The pipeline core shared by every driver, and the in-memory state it keeps."""
