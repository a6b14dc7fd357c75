module homekube.lab/hkecho

go 1.26
