"""Traffic routers: HTTPRoute weights, Route53 weighted records."""
