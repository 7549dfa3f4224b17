from flask import Blueprint

bp = Blueprint("store", __name__)


@bp.get("/")
def index() -> str:
    return "RelayGate"
