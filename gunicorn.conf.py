"""gunicorn settings (https://docs.gunicorn.org/en/stable/settings.html)."""

bind = "0.0.0.0:8000"
workers = 2
timeout = 60
accesslog = "-"
# %(U)s is the path without its query string: Instagram's redirect carries the
# authorization code in the query, and it must not reach the access log.
access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
