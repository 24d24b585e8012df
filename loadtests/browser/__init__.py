"""Browser stream users: real headless Chromium pages that read the streams as the product does.

- :mod:`.users`: the Locust users (``--browser-users N``), one page each;
- :mod:`.fleet`: one process's browser: the helper process, its pages, the bridge;
- :mod:`.bridge`: the loopback HTTP server the pages take orders from and send stamps to;
- :mod:`.host`: the helper process that drives Chromium with Playwright;
- :mod:`.page`: the page document (the product's client shape, ``static/``);
- :mod:`.chromium`: Debian's Chromium, its flags and the certificates it trusts;
- :mod:`.monitor`: the pages' CPU, memory and lag in the harness self-check.
"""
