"""Who is calling: credential paths, the resolved identity, decorators, delegation."""

from app.auth.decorators import auth_required, public, service_required
from app.auth.identity import AuthPath, Identity, ServicePrincipal, current_identity

__all__ = ["AuthPath", "Identity", "ServicePrincipal", "auth_required", "current_identity",
           "public", "service_required"]
