"""The polite web crawler: `urls` (spelling, start URLs, reachable addresses, robots.txt delays),
`http` (one bounded request), `pages` (a body to text and links), `crawler` (the crawl loop) and
`store` (the URL list in SQLite)."""
