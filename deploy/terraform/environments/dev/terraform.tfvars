# dev: addresses and where alarms go. The image is passed by the pipeline.
region           = "eu-west-1"
azs              = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
upstream_cidrs   = ["10.10.128.0/17"]
upstreams        = "web-stable.dev.internal:8080"
canary_upstreams = "web-canary.dev.internal:8080"
alarm_email      = "sluice-oncall+dev@example.com"
