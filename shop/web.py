"""The HTML shop: plain pages and forms that work with no JavaScript at all.

Every POST form carries a CSRF token (Flask-WTF, bound to the session) and a
fresh ``idempotency_key``, so a resubmitted form (back button, double click,
nginx retrying on another replica) applies once. After a POST the browser is
redirected (303) so a reload never resubmits. Domain errors become flash
messages on the page the user came from.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from . import accounts, appstate, cart, catalog, idempotency, identity, orders, replicamemory
from .accounts import User
from .config import STATE_MEMORY
from .errors import ShopError
from .formatting import duration, money
from .idempotency import IdempotencyClaim

bp = Blueprint("web", __name__)

NOT_FINGERPRINTED = {"csrf_token", idempotency.FORM_FIELD}


def describe_age(created_at: datetime | None, now: datetime | None = None) -> str:
    """A session's age in words, for the footer ('new' before it is stored)."""
    if created_at is None:
        return "new"
    return duration(((now or datetime.now(UTC)) - created_at).total_seconds())


def page_context() -> dict[str, Any]:
    """What every page shows: replica, session age, who is logged in, cart size.

    While Redis is down (the 503 page) nothing here touches the store.
    """
    context: dict[str, Any] = {
        "replica": current_app.config["REPLICA_NAME"],
        "store_down": bool(g.get("store_down")),
        "session_age": "unknown",
        "nav_user": None,
        "cart_count": 0,
        "demo_banner": replicamemory.BANNER
        if current_app.config["SHOP_STATE"] == STATE_MEMORY
        else None,
    }
    if context["store_down"]:
        return context
    context["nav_user"] = identity.current_user()
    context["session_age"] = describe_age(getattr(session, "created_at", None))
    owner = identity.cart_owner(create=False)
    if owner is not None:
        context["cart_count"] = cart.count(appstate.store(), owner)
    return context


def init_app(app: Flask) -> None:
    """Template helpers: the money filter, page context and per-form idempotency keys."""
    app.add_template_filter(money, "money")
    app.add_template_global(idempotency.new_key, "new_idempotency_key")
    app.context_processor(page_context)


def form_claim() -> IdempotencyClaim | None:
    """The claim for this form's hidden idempotency key (None if the form has none)."""
    fields = {k: v for k, v in sorted(request.form.items()) if k not in NOT_FINGERPRINTED}
    return identity.claim(request.form.get(idempotency.FORM_FIELD) or None, [fields])


def _see_other(endpoint: str, **values: Any) -> Response:
    return redirect(url_for(endpoint, **values), code=303)


def _attempt(action: Callable[[], str], back: str, **values: Any) -> Response:
    """Run a form action; flash its message (or the domain error) and go back to `back`."""
    try:
        flash(action(), "success")
    except ShopError as err:
        flash(err.message, "error")
    return _see_other(back, **values)


def _login_first(message: str, back: str) -> Response:
    """Send an anonymous visitor to the login page, coming back to `back` afterwards."""
    flash(message, "error")
    return _see_other("web.login", next=url_for(back))


# A path on this site, as RFC 3986 spells one: "/" then path and query
# characters only. No second "/" or backslash at the start (a browser reads
# "//host" and "/\host" as another site), and no whitespace or control
# character anywhere (browsers drop a tab or newline, so "/<tab>/host" becomes
# "//host"; and a newline in a Location header is a 500 from Werkzeug).
LOCAL_PATH_RE = re.compile(r"/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*")


def safe_next(target: str | None) -> str:
    """`target` if a strict parse says it is a path on this site, else the catalog.

    The allow-list decides; urlsplit then confirms there is no scheme or host.
    """
    if target and LOCAL_PATH_RE.fullmatch(target):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("web.catalog_page")


@bp.get("/")
def catalog_page():
    return render_template("catalog.html", products=catalog.list_products(appstate.store()))


@bp.post("/cart/add")
def add_to_cart():
    def action() -> str:
        product_id = cart.parse_product_id(request.form.get("product_id", ""))
        qty = cart.parse_form_qty(request.form.get("qty"))
        claim = form_claim()
        owner = identity.cart_owner(create=True)
        cart.add(appstate.store(), owner, product_id, qty, claim)
        name = catalog.products_by_id(appstate.store(), [product_id])[product_id].name
        return f"Added {qty} × {name} to your cart."

    # Back to the catalog at the product, under its own URL: the browser's
    # cached copy of the page the form was on is not overwritten, so Back
    # shows that page with the same idempotency key, and submitting it again
    # is recognised as a repeat.
    try:
        product_id = cart.parse_product_id(request.form.get("product_id", ""))
    except ShopError:
        return _attempt(action, "web.catalog_page")
    return _attempt(action, "web.catalog_page", added=product_id, _anchor=f"product-{product_id}")


@bp.get("/cart")
def cart_page():
    owner = identity.cart_owner(create=False)
    current = cart.get(appstate.store(), owner) if owner else cart.Cart([])
    return render_template("cart.html", cart=current)


def _change_line(qty_text: str | None) -> str:
    product_id = cart.parse_product_id(request.form.get("product_id", ""))
    qty = cart.parse_form_qty(qty_text, allow_zero=True)
    claim = form_claim()
    owner = identity.cart_owner(create=True)
    cart.set_qty(appstate.store(), owner, product_id, qty, claim)
    return "Removed the item." if qty == 0 else f"Quantity set to {qty}."


@bp.post("/cart/update")
def update_cart():
    return _attempt(lambda: _change_line(request.form.get("qty")), "web.cart_page")


@bp.post("/cart/remove")
def remove_from_cart():
    return _attempt(lambda: _change_line("0"), "web.cart_page")


@bp.post("/checkout")
def checkout():
    user = identity.current_user()
    if user is None:
        return _login_first("Please log in to check out; your cart is kept.", "web.cart_page")
    try:
        outcome = orders.checkout(appstate.store(), user.id, form_claim())
    except ShopError as err:
        flash(err.message, "error")
        return _see_other("web.cart_page")
    order = outcome.result
    flash(
        f"Thank you! Order #{order['order_id']} is placed: {money(order['total_cents'])}.",
        "success",
    )
    return _see_other("web.orders_page")


@bp.get("/orders")
def orders_page():
    user = identity.current_user()
    if user is None:
        return _login_first("Please log in to see your orders.", "web.orders_page")
    return render_template("orders.html", orders=orders.history(appstate.store(), user.id))


def _form_page(template: str, err: ShopError | None = None, **context: Any) -> Response:
    """Render a login/register page, with `err` flashed and its status kept."""
    status = 200
    if err is not None:
        flash(err.message, "error")
        status = err.status
    response = make_response(render_template(template, **context), status)
    if err is not None:
        response.headers.update(err.headers())
    return response


@bp.route("/register", methods=["GET", "POST"])
def register():
    if request.method == "GET":
        return _form_page("register.html", username="")
    username = request.form.get("username", "")
    try:
        outcome = accounts.register(
            appstate.store(),
            username,
            request.form.get("password", ""),
            hash_method=current_app.config["PASSWORD_HASH_METHOD"],
            claim=form_claim(),
        )
    except ShopError as err:
        return _form_page("register.html", err, username=username)
    user = User(id=outcome.result["user_id"], username=outcome.result["username"])
    identity.start_session(user)
    flash(f"Welcome, {user.username}! Your account is ready.", "success")
    return _see_other("web.catalog_page")


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_path = safe_next(request.values.get("next"))
    if request.method == "GET":
        return _form_page("login.html", username="", next_path=next_path)
    username = request.form.get("username", "")
    try:
        user = identity.log_in(username, request.form.get("password", ""))
    except ShopError as err:
        return _form_page("login.html", err, username=username, next_path=next_path)
    flash(f"Welcome back, {user.username}!", "success")
    return redirect(next_path, code=303)


@bp.post("/logout")
def logout():
    identity.log_out()
    flash("You are logged out.", "success")
    return _see_other("web.catalog_page")
