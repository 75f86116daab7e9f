"""The polite web crawler and its URL store."""
