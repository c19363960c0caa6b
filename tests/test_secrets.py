"""Secrets never reach output (docs/contract.md §4): a database password in every form asyncpg
accepts (userinfo, ``?password=``, ``?sslpassword=``) and the SASL password, in every command's
output, its log lines and error messages, and in ``/metrics``; and no SQL parameter (payload
text, tenant and request ids) in a logged database error."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from consumer.settings import Settings, redact_url

SECRET = "s3cr3t-Xq9"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://u:{SECRET}@h:5432/db", "postgresql://u:***@h:5432/db"),
        (f"postgresql://u@h/db?password={SECRET}", "postgresql://u@h/db?password=***"),
        (
            f"postgresql://u@h/db?sslmode=verify-full&sslpassword={SECRET}&sslkey=/k.pem",
            "postgresql://u@h/db?sslmode=verify-full&sslpassword=***&sslkey=/k.pem",
        ),
        (
            f"postgresql+asyncpg://u:{SECRET}@h/db?password={SECRET}&sslpassword={SECRET}",
            "postgresql+asyncpg://u:***@h/db?password=***&sslpassword=***",
        ),
        # Percent-encoded name (asyncpg decodes it), an "@" and a ":" inside the password.
        (f"postgresql://u@h/db?pass%77ord={SECRET}", "postgresql://u@h/db?pass%77ord=***"),
        (f"postgresql://u:a%40b:{SECRET}@h/db", "postgresql://u:***@h/db"),
        (f"postgresql://u:a@b{SECRET}@h/db", "postgresql://u:***@h/db"),
        (f"postgresql://:{SECRET}@h1:5432,h2:5433/db", "postgresql://:***@h1:5432,h2:5433/db"),
        (f"postgresql://u@h/db?PASSWORD={SECRET}", "postgresql://u@h/db?PASSWORD=***"),
        (
            f"postgresql://u@h/db?password=&x={SECRET}",
            f"postgresql://u@h/db?password=***&x={SECRET}",
        ),
        ("postgresql://u@h/db?application_name=x", "postgresql://u@h/db?application_name=x"),
        (f"postgresql://u:{SECRET}@[::1/db", "<unparseable URL>"),
    ],
)
def test_redact_url_masks_every_password_form(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}@h/db",
        f"postgresql://u@h/db?password={SECRET}",
        f"postgresql://u@h/db?sslpassword={SECRET}&sslkey=/k.pem&sslmode=require",
    ],
)
def test_settings_never_show_the_database_password(url: str) -> None:
    settings = Settings(database_url=url, kafka_sasl_password=SecretStr(SECRET))
    assert SECRET not in settings.redacted_database_url
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert SECRET not in str(settings.model_dump())
