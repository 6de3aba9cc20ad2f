"""Board entry point: run the Firstparty device application."""

# The Ed25519 table (and, with viper, the field registers beside it: one 13 KB buffer) needs one
# contiguous block: take it first, while the heap is empty, before any other module is loaded.
from fp import ed25519

ed25519.load_table()

from fp import app  # noqa: E402

app.main()
