from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import otp_views, views

urlpatterns = [
    path("login/", views.SessionLoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("login/otp/", otp_views.OtpLoginView.as_view(), name="login-otp"),
    path("account/2fa/", otp_views.OtpEnrolView.as_view(), name="otp-enrol"),
]
