"""Log sources: files (tail -F), stdin and Docker containers.  All yield ``LogChunk``s."""
