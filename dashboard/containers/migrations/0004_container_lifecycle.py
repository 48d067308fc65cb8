from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('containers', '0003_oom_event_card'),
    ]

    operations = [
        migrations.AddField(
            model_name='container',
            name='lifecycle',
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
