module linkedge.example/links

go 1.19
