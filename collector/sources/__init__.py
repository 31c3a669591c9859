"""Sources: each module registers its kind in ``collector.plugins.SOURCES``."""

from collector.sources import access_log as access_log
from collector.sources import cloud as cloud
from collector.sources import dc_file as dc_file
from collector.sources import dc_rest as dc_rest
