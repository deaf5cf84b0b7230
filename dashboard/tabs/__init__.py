"""The tabs of the page, one module each, every one drawn by ``render(page: Page)``."""
