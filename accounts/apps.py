from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Instagram registry"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
