module smolder.test/golabels

go 1.18
