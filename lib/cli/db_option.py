"""The --db option every command shares."""

DB_HELP = (
    "the store: a SQLite file or a postgresql:// URL (default: $SERVESCOPE_DB or "
    "data/servescope.db; put a URL with a password in $SERVESCOPE_DB, not here: a command "
    "line is visible to every user of the machine)"
)
