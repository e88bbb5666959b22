"""Pieces shared by the pages: banners, the time window, filters, flow formatting and
the service-map drawing."""
