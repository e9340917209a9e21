"""The server's HTML pages: the admin console at /admin and the user portal at /user (Jinja2, auto-escaped)."""
