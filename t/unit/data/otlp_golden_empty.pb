
R
=

service.name
edge "gw" �

service.version
0.1.0

sluice0.1.0