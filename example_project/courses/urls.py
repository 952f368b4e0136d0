"""Pages of the stand-in platform (so that course.viewed, content.accessed ... really happen)."""

from __future__ import annotations

from django.urls import path

from example_project.courses import views

app_name = "courses"

urlpatterns = [
    path("", views.course_list, name="list"),
    path("courses/<slug:name>/", views.course_detail, name="detail"),
    path("courses/<slug:name>/enroll/", views.enroll, name="enroll"),
    path("courses/<slug:name>/complete/", views.complete, name="complete"),
    path("courses/<slug:name>/lab/", views.lab, name="lab"),
    path("content/<int:pk>/", views.content_detail, name="content"),
    path("content/<int:pk>/watched/", views.video_watched, name="watched"),
    path("quizzes/<int:pk>/", views.quiz, name="quiz"),
]
