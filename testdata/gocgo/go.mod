module smolder.test/gocgo

go 1.18
