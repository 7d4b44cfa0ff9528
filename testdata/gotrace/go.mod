module smolder.test/gotrace

go 1.21

require smolder.dev/sdk/go v0.0.0

replace smolder.dev/sdk/go => ../../profiler/sdk/go
