"""`gdlab explore`: gradient descent on your own data, stepped live in a browser page.

`sessions` holds what the page drives (the engine's steppable run on an offered table);
`server` serves the page and its JSON API on 127.0.0.1 behind a token.
"""
