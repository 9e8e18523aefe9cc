"""The cloud agent: its round loop and HTTP client."""
