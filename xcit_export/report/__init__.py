"""Reports: report.json/.md (document), report.html and its plots, the INT8 section, the CI gate."""
