"""Django's own rendering of dates (admin columns, read-only fields, date hierarchy) in
the registry's one format: `2027-01-27 20:25 UTC`, the minute in TIME_ZONE with its
abbreviation (accounts.timeutil.local_text says the same). Only what differs from
Django's English formats is here; the rest (input formats, month names) falls through.
https://docs.djangoproject.com/en/5.2/topics/i18n/formatting/#creating-custom-format-files
"""

DATETIME_FORMAT = "Y-m-d H:i T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i"
