module smolder.test/gochain

go 1.18
