"""Django admin for apps, accounts, token files, owner links, API keys, the event log
and data-deletion requests.

Thin: every write is a service call, every read a selector. Who may do what is declared
where it is done: each action names its permission (`@admin.action(permissions=...)`) and
each extra page checks one (see `account_actions` for the list).
"""

from . import (  # noqa: F401  (registers them)
    accounts,
    api_keys,
    apps,
    data_deletion,
    devices,
    events,
    owner_links,
    token_files,
)
