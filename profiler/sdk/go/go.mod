module smolder.dev/sdk/go

go 1.21
