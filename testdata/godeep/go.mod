module smolder.test/godeep

go 1.18
