"""Django admin for apps, accounts, token files, the event log and data-deletion requests.

Thin: every write is a service call, every read a selector. Who may do what is declared
where it is done: each action names its permission (`@admin.action(permissions=...)`) and
each extra page checks one (see `account_actions` for the list).
"""

from . import accounts, apps, data_deletion, devices, events, token_files  # noqa: F401  (registers them)
