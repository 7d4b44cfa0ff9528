module soakspin

go 1.18
