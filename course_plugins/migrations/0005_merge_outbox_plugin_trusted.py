"""Merge of two migrations made in parallel (the outbox and trusted plugins); no operations."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("course_plugins", "0004_outbox"),
        ("course_plugins", "0004_plugin_trusted"),
    ]

    operations = []
