"""Routes: which readings go where, on which terms, under the owner's signed grants."""
