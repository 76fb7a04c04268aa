# escape=`

FROM scratch
COPY a\b.txt C:\app\
RUN dir c:\ `
  && echo x
