"""sipwatch: explain SIP REGISTER failures on jambonz SBCs, alert on them, optionally fix them."""

__version__ = "0.1.0"
