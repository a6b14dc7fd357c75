module homekube.lab/pause

go 1.26
