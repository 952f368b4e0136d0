"""A small REST API over courses, so plugin vetoes can be seen as 400s by API clients."""

from __future__ import annotations

from rest_framework import permissions, routers, serializers, viewsets

from example_project.courses.models import Course


class CourseSerializer(serializers.ModelSerializer):
    class Meta:
        model = Course
        fields = ["id", "name", "title", "description", "organization", "published"]


class CourseViewSet(viewsets.ModelViewSet):
    """Courses; saving runs the plugins' ``before-course-save`` hooks (a refusal is a 400)."""

    queryset = Course.objects.order_by("id")
    serializer_class = CourseSerializer
    permission_classes = [permissions.IsAuthenticated]


router = routers.SimpleRouter()
router.register("courses", CourseViewSet)
urlpatterns = router.urls
