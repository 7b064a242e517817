module github.com/sectelemetry/telegraf-defender/tools/readme_linter

go 1.26.0

tool github.com/influxdata/telegraf/tools/readme_linter

require (
	github.com/influxdata/telegraf v1.39.3 // indirect
	github.com/yuin/goldmark v1.8.5 // indirect
)
