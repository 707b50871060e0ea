# prod: addresses and where alarms go. The image is passed by the pipeline.
region           = "eu-west-1"
azs              = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
upstream_cidrs   = ["10.30.128.0/17"]
upstreams        = "web-stable.prod.internal:8080"
canary_upstreams = "web-canary.prod.internal:8080"
alarm_email      = "sluice-oncall+prod@example.com"
