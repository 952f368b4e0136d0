from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('course_plugins', '0003_control'),
    ]

    operations = [
        migrations.AddField(
            model_name='plugin',
            name='trusted',
            field=models.BooleanField(default=False, help_text="Run this plugin's code inside the site's own processes, with access to everything they can reach (settings, secrets, files, database, network). Leave it off unless you would accept this code in your own code base: an untrusted plugin runs isolated in a confined worker process, where it reaches only what its permissions grant."),
        ),
    ]
