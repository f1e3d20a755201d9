"""What the console's browser tests share: the page's errors, and giving it the read token."""

from __future__ import annotations

from typing import Any


def record_page_errors(page: Any, errors: list[str]) -> None:
    """Append to ``errors`` every page error, failed request and script error the page has.

    The 401s that make a page ask for a token are expected, and left out; a CSP violation is
    a script error the page logs.
    """
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}") if r.status >= 400 and r.status != 401 else None
        ),
    )
    page.on(
        "console",
        lambda m: (
            errors.append(f"console {m.type}: {m.text}")
            if m.type == "error" and "status of 401" not in m.text
            else None
        ),
    )


def give_read_token(page: Any, token: str) -> None:
    """Answer the page's token panel with the read token ``token``."""
    page.wait_for_selector("#token-panel:not([hidden])")
    assert "Read token" in (page.text_content("#token-label") or "")
    page.fill("#token-input", token)
    page.press("#token-input", "Enter")
