"""Account API: registration, JWT login/refresh/logout, and who-am-I. Thin: parse, call, render."""

from __future__ import annotations

from django.contrib.auth.validators import UnicodeUsernameValidator
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Role
from accounts.services import auth_logout, auth_token_obtain, auth_token_refresh, user_register

_ERROR = OpenApiResponse(description='`{"error": {"code": ..., "message": ...}}`')


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


class RegisterApi(_PublicAuthApi):
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

        class Meta:
            ref_name = "RegisteredUser"

    @extend_schema(
        operation_id="auth_register",
        summary="Request an account",
        description=(
            "Anyone (no authentication). Creates an INACTIVE account with the requested role, "
            "technician or doctor; an administrator activates it in Django admin. Requesting "
            "`admin` is refused with `role_not_allowed`. Weak passwords: `invalid_password`; a "
            "name in use: `username_taken`."
        ),
        request=InputSerializer,
        responses={201: OutputSerializer, 400: _ERROR},
        auth=[],
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = user_register(**serializer.validated_data, request=request)
        return Response(self.OutputSerializer(user).data, status=status.HTTP_201_CREATED)


class TokenObtainApi(_PublicAuthApi):
    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = _password_field()

        class Meta:
            ref_name = "TokenObtainRequest"

    @extend_schema(
        operation_id="auth_token_obtain",
        summary="Log in (JWT)",
        description=(
            "Anyone (no authentication). Exchanges an active user's username and password for "
            "an access and a refresh token. Wrong credentials or an inactive account: 401 "
            "`no_active_account`. Successes and failures are audited."
        ),
        request=InputSerializer,
        responses={200: TokenPairOutputSerializer, 400: _ERROR, 401: _ERROR},
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
        responses={200: TokenPairOutputSerializer, 400: _ERROR, 401: _ERROR},
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
            "it can no longer be refreshed; the short-lived access token expires on its own. "
            "An invalid or already blacklisted token: 401 `token_not_valid`."
        ),
        request=InputSerializer,
        responses={204: None, 400: _ERROR, 401: _ERROR},
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
        username = serializers.CharField()
        role = serializers.CharField()

        class Meta:
            ref_name = "Me"

    @extend_schema(
        operation_id="auth_me",
        summary="Who am I",
        description="Any authenticated user (every role). Returns the caller's username and role.",
        responses={200: OutputSerializer, 401: _ERROR},
    )
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(request.user).data)
