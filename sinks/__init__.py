"""Sinks: where events and alerts go. Importing this package registers every kind."""

from sinks import file as file
from sinks import kafka as kafka
from sinks import splunk_hec as splunk_hec
from sinks import stdout as stdout
from sinks import syslog as syslog
