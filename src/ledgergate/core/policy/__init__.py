"""Policy: SQL classification (pglast), rules, and decisions."""
