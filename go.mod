module github.com/hatgt/hatgt

go 1.26.8
