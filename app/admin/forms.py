"""Admin forms. Every POST form is a FlaskForm (CSRF); filters are GET forms without CSRF."""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateField,
    IntegerField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, Regexp, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from app.admin.formatting import AMOUNT_PATTERN, amount_cents, thousands
from app.models import utcnow
from app.models.multiplier import MultiplierError, format_multiplier, parse_multiplier

MAX_TOKENS = 10**12
EMAIL_RE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
OUTCOMES = ("done", "client_closed", "upstream_error", "timeout")


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


def _email() -> list[Any]:
    return [Optional(), Length(max=254), Regexp(EMAIL_RE, message=_l("Enter a valid email address."))]


def _whole(label: Any, low: int, high: int, required: bool = False) -> IntegerField:
    message = _l("Enter a whole number from %(min)s to %(max)s.", min=thousands(low), max=thousands(high))
    first = InputRequired(_l("This field is required.")) if required else Optional()
    return IntegerField(label, [first, NumberRange(low, high, message=message)])


class MultiplierField(StringField):
    """A route multiplier typed as a decimal ("0.02"); `data` is the 1/UNIT the route stores, or None."""

    def __init__(self, label: Any, *, allow_zero: bool = False, required: bool = True, **kwargs: Any) -> None:
        first = InputRequired(_l("This field is required.")) if required else Optional()
        super().__init__(label, [first], **kwargs)
        self.allow_zero = allow_zero

    def process_formdata(self, valuelist: list[Any]) -> None:
        text = (valuelist[0] if valuelist else "") or ""
        self.data = None
        if not text.strip():
            return
        try:
            self.data = parse_multiplier(text, "The multiplier", allow_zero=self.allow_zero)
        except MultiplierError:
            # The same rule as `models set`, in the admin's language.
            raise ValueError(_multiplier_message(self.allow_zero)) from None

    def _value(self) -> str:
        if self.raw_data:
            return str(self.raw_data[0])
        return format_multiplier(self.data) if isinstance(self.data, int) else ""


def _multiplier_message(allow_zero: bool) -> str:
    if allow_zero:
        return str(_l("Enter a number from 0 to 1,000 with at most 4 decimals, like 0.02."))
    return str(_l("Enter a number from 0.0001 to 1,000 with at most 4 decimals, like 1 or 0.5."))


class KeyEditForm(FlaskForm):
    name = StringField(_l("Name"), [Optional(), Length(max=120)])
    email = StringField(_l("Buyer email"), _email())
    rpm = _whole(_l("Requests per minute"), 1, 100_000)
    max_concurrent = _whole(_l("Concurrent requests"), 1, 1_000)
    expires = DateField(_l("Expires on (UTC)"), [Optional()])
    models = MultiCheckboxField(_l("Allowed models"), choices=[])
    reasoning_passthrough = BooleanField(_l("Pass reasoning_content through"))
    note = TextAreaField(_l("Note"), [Optional(), Length(max=500)])

    def changes(self) -> dict[str, Any]:
        """The fields as accounts.update_key takes them."""
        from datetime import datetime

        return {
            "name": (self.name.data or "").strip(),
            "email": (self.email.data or "").strip().lower() or None,
            "rpm": self.rpm.data,
            "max_concurrent": self.max_concurrent.data,
            "expires_at": datetime.combine(self.expires.data, datetime.min.time()) if self.expires.data else None,
            "allowed_models": sorted(self.models.data) or None,
            "reasoning_passthrough": bool(self.reasoning_passthrough.data),
            "note": (self.note.data or "").strip(),
        }


class KeyCreateForm(KeyEditForm):
    tokens = _whole(_l("Tokens"), 0, MAX_TOKENS, required=True)

    def validate_expires(self, field: DateField) -> None:
        if field.data and field.data <= utcnow().date():
            raise ValidationError(_l("The expiry date must be in the future."))


class TopupForm(FlaskForm):
    tokens = _whole(_l("Tokens to add"), 1, MAX_TOKENS, required=True)


class PlanForm(FlaskForm):
    name = StringField(_l("Name (English)"), [DataRequired(_l("Give the plan a name.")), Length(max=120)])
    name_zh = StringField(_l("Name (Chinese)"), [Optional(), Length(max=120)])
    tokens = _whole(_l("Tokens"), 1, MAX_TOKENS, required=True)
    price = StringField(
        _l("Price"),
        [
            DataRequired(_l("Enter a price.")),
            Regexp(r"^\d{1,7}(\.\d{1,2})?$", message=_l("Enter a price like 4.99 (at most two decimals).")),
        ],
    )
    currency = StringField(
        _l("Currency"),
        [DataRequired(), Regexp(r"^[A-Z]{3}$", message=_l("Use a three-letter currency code such as USD."))],
        filters=[lambda v: (v or "").strip().upper()],
        default="USD",
    )
    models = MultiCheckboxField(_l("Models"), choices=[])
    rpm = _whole(_l("Requests per minute"), 1, 100_000)
    valid_days = _whole(_l("Valid for (days)"), 1, 3650)
    sort_order = _whole(_l("Sort order"), -1000, 1000)
    active = BooleanField(_l("On sale"), default=True)

    def validate_price(self, field: StringField) -> None:
        if field.data and re.fullmatch(r"[0.]+", field.data):
            raise ValidationError(_l("The price must be more than zero."))

    @property
    def price_cents(self) -> int:
        return amount_cents(self.price.data)


class UpstreamForm(FlaskForm):
    name = StringField(
        _l("Name"),
        [
            DataRequired(_l("Give the upstream a name.")),
            Regexp(r"^[a-z0-9][a-z0-9_-]{0,79}$", message=_l("Lower-case letters, digits, '-' and '_' only.")),
        ],
        filters=[lambda v: (v or "").strip()],
    )
    base_url = StringField(
        _l("Base URL"),
        [DataRequired(_l("Enter the base URL.")), Length(max=500)],
        filters=[lambda v: (v or "").strip()],
    )
    api_key = PasswordField(_l("API key"), [Optional(), Length(max=500)])
    enabled = BooleanField(_l("Enabled"), default=True)
    max_concurrency = _whole(_l("Max concurrency"), 0, 100_000)
    low_balance = StringField(
        _l("Low-balance warning below"),
        [
            Optional(),
            Regexp(rf"^{AMOUNT_PATTERN}$", message=_l("Enter an amount like 5 or 12.50 (at most two decimals).")),
        ],
        filters=[lambda v: (v or "").strip()],
    )

    @property
    def low_balance_cents(self) -> int | None:
        """Decimal, never float: "0.29" is 29 cents."""
        return amount_cents(self.low_balance.data) if self.low_balance.data else None

    def validate_base_url(self, field: StringField) -> None:
        if field.data != "demo:" and not re.match(r"^https?://[^\s/]+", field.data or ""):
            raise ValidationError(_l("The base URL must start with http:// or https://."))


class RouteForm(FlaskForm):
    public_id = StringField(
        _l("Public model id"),
        [
            DataRequired(_l("Enter the model id clients send.")),
            Regexp(
                r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,119}$",
                message=_l("One word: letters, digits, '.', '-', '_' or ':'; no spaces or '/'."),
            ),
        ],
        filters=[lambda v: (v or "").strip()],
    )
    upstream = SelectField(_l("Upstream"), choices=[])
    upstream_model = StringField(
        _l("Upstream model"), [DataRequired(_l("Enter the upstream's model id.")), Length(max=120)]
    )
    prompt_multiplier = MultiplierField(_l("Prompt multiplier (cache miss)"))
    # Empty on a new route: DeepSeek's hit/miss price ratio for its model (catalog.set_route).
    cache_hit_multiplier = MultiplierField(_l("Cache-hit multiplier"), allow_zero=True, required=False)
    completion_multiplier = MultiplierField(_l("Completion multiplier"))
    extra_body = TextAreaField(_l("Extra body (JSON object)"), [Optional()])
    description = StringField(_l("Description"), [Optional(), Length(max=300)])
    enabled = BooleanField(_l("Enabled"), default=True)

    def validate_extra_body(self, field: TextAreaField) -> None:
        try:
            value = json.loads(field.data) if (field.data or "").strip() else {}
        except ValueError:
            raise ValidationError(_l("Not valid JSON.")) from None
        if not isinstance(value, dict):
            raise ValidationError(_l('Must be a JSON object, like {"thinking": {"type": "disabled"}}.'))

    @property
    def extra_body_value(self) -> dict[str, Any]:
        return json.loads(self.extra_body.data) if (self.extra_body.data or "").strip() else {}


class FilterForm(FlaskForm):
    """Base for GET filter forms: read from the query string, no CSRF (they change nothing)."""

    class Meta:
        csrf = False


class UsageFilterForm(FilterForm):
    key = StringField(_l("Key"), [Optional(), Length(max=100)], filters=[lambda v: (v or "").strip()])
    model = SelectField(_l("Model"), choices=[], validate_choice=False)
    outcome = SelectField(_l("Outcome"), choices=[], validate_choice=False)
    status = _whole(_l("HTTP status"), 100, 599)
    date_from = DateField(_l("From"), [Optional()])
    date_to = DateField(_l("To"), [Optional()])

    def validate_date_to(self, field: DateField) -> None:
        start: date | None = self.date_from.data
        if field.data and start and field.data < start:
            raise ValidationError(_l("The end date is before the start date."))


class GiftCodeForm(FlaskForm):
    plan = SelectField(_l("Plan"), coerce=int, choices=[])
    count = _whole(_l("Number of codes"), 1, 1000, required=True)
    expires = DateField(_l("Expires on (UTC)"), [Optional()])
    note = StringField(_l("Note"), [Optional(), Length(max=200)], filters=[lambda v: (v or "").strip()])

    validate_expires = KeyCreateForm.validate_expires


class TargetForm(FlaskForm):
    """One target of a model's pool; the upstream is chosen only when the target is added."""

    upstream = SelectField(_l("Upstream"), choices=[])
    upstream_model = StringField(
        _l("Upstream model"), [Optional(), Length(max=120)], filters=[lambda v: (v or "").strip()]
    )
    priority = _whole(_l("Priority"), -1000, 1000, required=True)
    weight = _whole(_l("Weight"), 1, 1000, required=True)


class StatusNoticeForm(FlaskForm):
    notice_en = TextAreaField(
        _l("Notice (English)"), [Optional(), Length(max=500)], filters=[lambda v: (v or "").strip()]
    )
    notice_zh = TextAreaField(
        _l("Notice (Chinese)"), [Optional(), Length(max=500)], filters=[lambda v: (v or "").strip()]
    )
