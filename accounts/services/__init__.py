"""Every write the registry makes: authorize, exchange, verify, import, refresh, export,
re-encrypt, and what Meta's deauthorize and data-deletion callbacks ask for.

Functions take keyword-only arguments and `now`, so callers (admin, views, tasks,
commands) stay thin and tests control time. Network calls happen outside database
transactions unless a row lock must span them (a refresh); the rows they change are
locked and re-read before writing. Messages in `FlowError` and in events are shown to
staff: they never hold a secret.
"""

from .alert_outbox import (
    DeliveryReport,
    alert_deliveries_send,
    alert_retry_delay,
    webhook_signature,
)
from .alerts import AlertItem, AlertReport, alert_notice_queue, alerts_dispatch
from .api_keys import api_key_create, api_key_revoke, api_key_touch, api_read_record
from .common import Actor, FlowError, event_record, instagram_client, profile_fields
from .files import (
    FileNameTaken,
    ReconcileReport,
    token_export,
    token_file_dead_token_apply,
    token_file_release,
    token_file_remove,
    token_file_take_over,
    token_files_reconcile,
    token_files_write,
)
from .keys import secrets_reencrypt
from .meta_callbacks import DataDeletionFailed, data_deletion_apply, deauthorize_apply
from .oauth import (
    oauth_callback,
    oauth_complete,
    oauth_paste,
    oauth_start,
    oauth_state_consume,
    oauth_state_issue,
)
from .onboarding import account_role_confirm
from .owner_links import (
    OwnerFlowFailed,
    OwnerFlowStart,
    OwnerLinkRefused,
    owner_link_actor,
    owner_link_callback,
    owner_link_create,
    owner_link_refusal,
    owner_link_revoke,
    owner_link_start,
)
from .refresh import (
    Outcome,
    RefreshResult,
    SweepPlan,
    pending_swap,
    pending_sweep,
    refresh_mark_queued,
    refresh_sweep,
    retry_delay,
    sweep_record_success,
    token_refresh,
    tokens_flag_expired,
    tokens_refresh_many,
    usage_record,
)
from .tokens import account_verify, token_import, token_store
from .webhooks import (
    WebhookReport,
    standard_webhook_headers,
    token_changes_queue,
    token_webhooks_dispatch,
    webhook_deliveries_send,
)

__all__ = [
    "WebhookReport",
    "standard_webhook_headers",
    "token_changes_queue",
    "token_webhooks_dispatch",
    "webhook_deliveries_send",
    "api_key_create",
    "api_key_revoke",
    "api_key_touch",
    "api_read_record",
    "AlertItem",
    "AlertReport",
    "alerts_dispatch",
    "alert_notice_queue",
    "DeliveryReport",
    "alert_deliveries_send",
    "alert_retry_delay",
    "webhook_signature",
    "Outcome",
    "RefreshResult",
    "SweepPlan",
    "pending_swap",
    "pending_sweep",
    "refresh_mark_queued",
    "refresh_sweep",
    "retry_delay",
    "sweep_record_success",
    "token_refresh",
    "tokens_flag_expired",
    "tokens_refresh_many",
    "usage_record",
    "Actor",
    "FlowError",
    "account_verify",
    "event_record",
    "instagram_client",
    "account_role_confirm",
    "oauth_callback",
    "oauth_complete",
    "oauth_paste",
    "oauth_start",
    "oauth_state_consume",
    "oauth_state_issue",
    "OwnerFlowFailed",
    "OwnerFlowStart",
    "OwnerLinkRefused",
    "owner_link_actor",
    "owner_link_callback",
    "owner_link_create",
    "owner_link_refusal",
    "owner_link_revoke",
    "owner_link_start",
    "profile_fields",
    "secrets_reencrypt",
    "DataDeletionFailed",
    "data_deletion_apply",
    "deauthorize_apply",
    "token_export",
    "FileNameTaken",
    "token_file_dead_token_apply",
    "token_file_release",
    "token_file_remove",
    "token_file_take_over",
    "token_files_reconcile",
    "token_files_write",
    "ReconcileReport",
    "token_import",
    "token_store",
]
