"""Account API: registration, JWT login/refresh/logout, and who-am-I. Thin: parse, call, render."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.validators import UnicodeUsernameValidator
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from accounts import keyexchange
from accounts.models import Role
from accounts.permissions import IsClinical
from accounts.services import auth_logout, auth_token_obtain, auth_token_refresh, user_register
from accounts.session_keys import key_exchange_begin, key_exchange_complete
from audit.services import client_ip
from medimg.api import ERROR_ELIDED, error_responses
from medimg.ratelimit import rate_limit_hit, rate_limit_retry_after


def _password_field() -> serializers.CharField:
    return serializers.CharField(
        write_only=True, trim_whitespace=False, max_length=256, style={"input_type": "password"}
    )


class _PublicAuthApi(APIView):
    """Endpoints that take credentials in the body: no session, so no CSRF and no cookie reuse."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request: Request) -> str:
        # Without a challenge DRF would turn our 401s into 403s.
        return 'Bearer realm="api"'


class TokenPairOutputSerializer(serializers.Serializer):
    access = serializers.CharField(help_text="Access token (Bearer), valid 15 minutes or less.")
    refresh = serializers.CharField(help_text="Refresh token: single use, rotated on refresh.")

    class Meta:
        ref_name = "TokenPair"


class RegistrationThrottle(BaseThrottle):
    """At most MEDIMG_REGISTRATIONS_PER_HOUR registration requests per client address per
    hour, counted in the shared cache (medimg.ratelimit); the address is REMOTE_ADDR, as in
    the audit log, never a client-sent X-Forwarded-For."""

    WINDOW = 3600

    def allow_request(self, request: Request, view: APIView) -> bool:
        ident = client_ip(request) or "unknown"
        count = rate_limit_hit("register", ident, window_seconds=self.WINDOW)
        return count <= settings.MEDIMG_REGISTRATIONS_PER_HOUR

    def wait(self) -> float:
        return float(rate_limit_retry_after(self.WINDOW))


class RegisterApi(_PublicAuthApi):
    throttle_classes = [RegistrationThrottle]

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150, validators=[UnicodeUsernameValidator()])
        password = _password_field()
        role = serializers.ChoiceField(choices=Role.choices)
        email = serializers.EmailField(required=False, default="")
        first_name = serializers.CharField(required=False, default="", max_length=150)
        last_name = serializers.CharField(required=False, default="", max_length=150)

        class Meta:
            ref_name = "RegisterRequest"

    class OutputSerializer(serializers.Serializer):
        username = serializers.CharField()
        role = serializers.CharField()
        is_active = serializers.BooleanField()
        detail = serializers.CharField()

        class Meta:
            ref_name = "RegisteredUser"

    ACCEPTED = (
        "If that username was free, an account request was created; an administrator "
        "activates it before it can log in."
    )

    @extend_schema(
        operation_id="auth_register",
        summary="Request an account",
        description=(
            "Anyone (no authentication). Creates an INACTIVE account with the requested role, "
            "technician or doctor; an administrator activates it in Django admin. Requesting "
            "`admin` is refused with `role_not_allowed`; weak passwords with "
            "`invalid_password`. The answer (202) is the same whether the name was free or "
            "taken, so registration does not reveal which usernames exist. At most "
            "MEDIMG_REGISTRATIONS_PER_HOUR requests per address per hour (then 429 "
            "`throttled`, with Retry-After)."
        ),
        request=InputSerializer,
        responses={202: OutputSerializer, **error_responses(400, 429, error=ERROR_ELIDED)},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user_register(**serializer.validated_data, request=request)
        data = serializer.validated_data
        body = {
            "username": data["username"],
            "role": data["role"],
            "is_active": False,
            "detail": self.ACCEPTED,
        }
        return Response(self.OutputSerializer(body).data, status=status.HTTP_202_ACCEPTED)


class TokenObtainApi(_PublicAuthApi):
    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = _password_field()
        otp = serializers.CharField(
            required=False,
            allow_blank=True,
            max_length=10,
            write_only=True,
            help_text="The current six-digit TOTP code; required once the user has set up "
            "two-factor login (always, for admins).",
        )

        class Meta:
            ref_name = "TokenObtainRequest"

    @extend_schema(
        operation_id="auth_token_obtain",
        summary="Log in (JWT)",
        description=(
            "Anyone (no authentication). Exchanges an active user's username and password for "
            "an access and a refresh token. Wrong credentials or an inactive account: 401 "
            "`no_active_account`. A user with two-factor login must also send `otp`: "
            "missing, 401 `otp_required`; wrong, 401 `otp_invalid`; an admin who has not set "
            "it up, 401 `otp_enrolment_required`. After LOGIN_FAILURE_LIMIT failures for the "
            "same username and address, 429 `throttled` until LOGIN_COOLOFF_MINUTES pass, "
            "even with the right password. Successes and failures are audited."
        ),
        request=InputSerializer,
        responses={
            200: TokenPairOutputSerializer,
            **error_responses(400, 401, 429, error=ERROR_ELIDED),
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        pair = auth_token_obtain(**serializer.validated_data, request=request)
        return Response(TokenPairOutputSerializer(pair).data)


class TokenRefreshApi(_PublicAuthApi):
    class InputSerializer(serializers.Serializer):
        refresh = serializers.CharField()

        class Meta:
            ref_name = "TokenRefreshRequest"

    @extend_schema(
        operation_id="auth_token_refresh",
        summary="Refresh a JWT pair",
        description=(
            "Anyone holding a valid refresh token (the token is the credential). Returns a new "
            "access and refresh token; the refresh token sent is blacklisted, so using it again "
            "is refused with 401 `token_not_valid`. Inactive accounts: 401."
        ),
        request=InputSerializer,
        responses={200: TokenPairOutputSerializer, **error_responses(400, 401, error=ERROR_ELIDED)},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        pair = auth_token_refresh(**serializer.validated_data, request=request)
        return Response(TokenPairOutputSerializer(pair).data)


class LogoutApi(_PublicAuthApi):
    class InputSerializer(serializers.Serializer):
        refresh = serializers.CharField()

        class Meta:
            ref_name = "LogoutRequest"

    @extend_schema(
        operation_id="auth_logout",
        summary="Log out (JWT)",
        description=(
            "Anyone holding a valid refresh token (the token is the credential). Blacklists it so "
            "it can no longer be refreshed; the access tokens of the same login (through every "
            "rotation) are refused from then on, and the user's key-exchange session keys end. "
            "An invalid or already blacklisted token: 401 `token_not_valid`."
        ),
        request=InputSerializer,
        responses={204: None, **error_responses(400, 401, error=ERROR_ELIDED)},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        auth_logout(**serializer.validated_data, request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeApi(APIView):
    permission_classes = [IsAuthenticated]

    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField(
            help_text="The user id, part of the key-exchange derivation (HKDF info)."
        )
        username = serializers.CharField()
        role = serializers.CharField()

        class Meta:
            ref_name = "Me"

    @extend_schema(
        operation_id="auth_me",
        summary="Who am I",
        description=(
            "Any authenticated user (every role). Returns the caller's id, username and role."
        ),
        responses={200: OutputSerializer, **error_responses(401, error=ERROR_ELIDED)},
    )
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(request.user).data)


class KeyExchangeApi(APIView):
    """Agree a session key with a client that seals restore downloads and uploads."""

    permission_classes = [IsClinical]

    class OfferSerializer(serializers.Serializer):
        class ParametersSerializer(serializers.Serializer):
            p = serializers.CharField(help_text="The RFC 7919 ffdhe3072 prime, upper-case hex.")
            g = serializers.IntegerField(help_text="The generator: 2.")
            public_key_bytes = serializers.IntegerField(
                help_text="Length of a public key in bytes (384): left-pad with zeros."
            )

            class Meta:
                ref_name = "KeyExchangeParameters"

        exchange_id = serializers.CharField(help_text="Send back with the client public key.")
        group = serializers.ChoiceField(choices=keyexchange.GROUPS)
        server_public_key = serializers.CharField(
            help_text="Base64: 32 raw bytes (x25519) or 384 big-endian bytes (ffdhe3072)."
        )
        parameters = ParametersSerializer(
            allow_null=True, help_text="Group parameters for ffdhe3072; null for x25519."
        )
        expires_in = serializers.IntegerField(help_text="Seconds left to complete the exchange.")

        class Meta:
            ref_name = "KeyExchangeOffer"

    class InputSerializer(serializers.Serializer):
        exchange_id = serializers.CharField(max_length=64)
        public_key = serializers.CharField(
            max_length=1024,
            help_text="The client public key, base64, same encoding as the server's.",
        )

        class Meta:
            ref_name = "KeyExchangeRequest"

    class OutputSerializer(serializers.Serializer):
        key_id = serializers.CharField(
            help_text="Session key id: send it as the X-Medimg-Seal header. It is the last 16 "
            "bytes of the HKDF output in hex, so computing it proves both sides agree."
        )
        group = serializers.CharField()
        expires_in = serializers.IntegerField(help_text="Seconds the session key lives.")

        class Meta:
            ref_name = "SessionKey"

    @extend_schema(
        operation_id="auth_key_exchange_begin",
        summary="Start a key exchange",
        description=(
            "Technicians and doctors. Returns a fresh server public key for `group` (x25519, "
            "the default, or ffdhe3072 from RFC 7919 with its parameters) and an exchange id "
            "valid for 2 minutes, for this user only, usable once. Unknown group: 400 "
            "`invalid_group`. Derivation: HKDF-SHA256 over the shared secret, info binding "
            "the group, the user id, the exchange id and both public keys "
            "(accounts/keyexchange.py)."
        ),
        parameters=[
            OpenApiParameter(
                "group", str, enum=list(keyexchange.GROUPS), default=keyexchange.X25519
            )
        ],
        responses={200: OfferSerializer, **error_responses(400, 401, 403, error=ERROR_ELIDED)},
    )
    def get(self, request: Request) -> Response:
        group = request.query_params.get("group", keyexchange.X25519)
        offer = key_exchange_begin(user=request.user, group=group)
        parameters = None
        if offer.group == keyexchange.FFDHE3072:
            parameters = {
                "p": format(keyexchange.FFDHE3072_P, "X"),
                "g": keyexchange.FFDHE3072_G,
                "public_key_bytes": keyexchange.FFDHE3072_BYTES,
            }
        data = {
            "exchange_id": offer.exchange_id,
            "group": offer.group,
            "server_public_key": keyexchange.b64encode(offer.server_public_key),
            "parameters": parameters,
            "expires_in": offer.expires_in,
        }
        return Response(self.OfferSerializer(data).data)

    @extend_schema(
        operation_id="auth_key_exchange_complete",
        summary="Complete a key exchange",
        description=(
            "Technicians and doctors, the same user who started the exchange. Takes the client "
            "public key and returns the session key id; the key lives SESSION_KEY_SECONDS "
            "(default 1 hour) and dies at logout, password change or deactivation. A key of "
            "the wrong length, out of range, outside the prime-order subgroup or of small "
            "order: 400 `invalid_public_key` (the exchange is then used up). An unknown, "
            "expired, reused or another user's exchange id: 400 `invalid_exchange`."
        ),
        request=InputSerializer,
        responses={201: OutputSerializer, **error_responses(400, 401, 403, error=ERROR_ELIDED)},
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        info = key_exchange_complete(
            user=request.user, **serializer.validated_data, request=request
        )
        return Response(self.OutputSerializer(info).data, status=status.HTTP_201_CREATED)
