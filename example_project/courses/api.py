"""A small REST API over courses, so plugin vetoes can be seen as 400s by API clients."""

from __future__ import annotations

from rest_framework import permissions, routers, serializers, viewsets

from example_project.courses.models import Course


class StrictBooleanField(serializers.BooleanField):
    """A JSON ``true``/``false`` only: ``0``, ``"yes"`` and the like are refused (400)."""

    def to_internal_value(self, data: object) -> bool:
        if isinstance(data, bool):
            return data
        self.fail("invalid", input=data)
        raise AssertionError  # fail() raises


class CourseSerializer(serializers.ModelSerializer):
    published = StrictBooleanField(required=False)

    class Meta:
        model = Course
        fields = ["id", "name", "title", "description", "organization", "published"]


class CourseViewSet(viewsets.ModelViewSet):
    """Courses; saving runs the plugins' ``before-course-save`` hooks (a refusal is a 400)."""

    queryset = Course.objects.order_by("id")
    lookup_value_regex = "[^/]+"  # any id reaches the view: a JSON 404 when there is none
    serializer_class = CourseSerializer
    permission_classes = [permissions.IsAuthenticated]


router = routers.SimpleRouter()
router.register("courses", CourseViewSet)
urlpatterns = router.urls
