from flask.cli import AppGroup

admin_cli = AppGroup("admin", help="Admin accounts for the dashboard.")
