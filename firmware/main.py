"""Board entry point: run the Firstparty device application."""

from fp import app

app.main()
