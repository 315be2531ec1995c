import streamlit as st
st.title("2_target")
st.info("coming")
